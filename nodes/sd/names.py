"""The names of the samplers and step schedules, in the order the editor lists them: the one
place they are written. `samplers.SAMPLERS` and `schedules.SCHEDULES` map them to their
functions (`sample_<name>`, `<name>_sigmas`), and the sampler nodes' choices are these tuples.
Torch-free, so the node catalog does not load torch."""

SAMPLER_NAMES = ("euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2m", "dpmpp_2m_sde",
                 "dpmpp_sde", "dpmpp_3m_sde", "ddim", "uni_pc", "lcm")

SCHEDULE_NAMES = ("normal", "karras", "exponential", "simple", "sgm_uniform", "ddim_uniform", "beta")
