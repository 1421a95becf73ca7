"""Resolve the components named in a checkpoint's model_index.json to classes.

A diffusers Wan directory names diffusers/transformers classes. dualpar's own components (the toy world's
codec and prompt encoder) are named ["dualpar", "<ClassName>"] and resolved here, so every model loads
through one code path.
"""

from __future__ import annotations

import importlib
from typing import Any

DUALPAR_COMPONENTS: dict[str, str] = {
    "SpaceToDepthCodec": "dualpar.toyworld.codec:SpaceToDepthCodec",
    "WordPromptEncoder": "dualpar.toyworld.text:WordPromptEncoder",
    "WordTokenizer": "dualpar.toyworld.text:WordTokenizer",
}


def resolve_component(library: str, class_name: str) -> Any:
    """Return the class for a model_index.json entry [library, class_name]."""
    if library == "dualpar":
        if class_name not in DUALPAR_COMPONENTS:
            raise ValueError(f"unknown dualpar component {class_name!r}; known: {sorted(DUALPAR_COMPONENTS)}")
        module_name, attr = DUALPAR_COMPONENTS[class_name].split(":")
        return getattr(importlib.import_module(module_name), attr)
    if library in ("diffusers", "transformers"):
        module = importlib.import_module(library)
        if not hasattr(module, class_name):
            raise ValueError(f"{library} has no class {class_name!r} (model_index.json)")
        return getattr(module, class_name)
    raise ValueError(f"component library {library!r} is not supported (model_index.json)")
