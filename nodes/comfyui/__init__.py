"""ComfyUI compatibility: its workflows (UI and API format, and PNGs carrying them) converted to
ours with a report of what could not be, and its node types described for `/object_info`."""

from latentgraph.nodes.comfyui.convert import (ComfyImportError, ImportReport, ImportResult, detect_format,
                                               import_document, load_document, read_png_chunks)
from latentgraph.nodes.comfyui.mapping import BY_TYPE, MAPPINGS, NOT_SUPPORTED, NodeMap
from latentgraph.nodes.comfyui.object_info import object_info

__all__ = ["BY_TYPE", "MAPPINGS", "NOT_SUPPORTED", "ComfyImportError", "ImportReport", "ImportResult", "NodeMap",
           "detect_format", "import_document", "load_document", "object_info", "read_png_chunks"]
