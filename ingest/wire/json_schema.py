"""The wire format as JSON Schema files, generated from the models: producers in other languages
validate against ``ingest/wire/schemas/*.json``; a test fails when the files and models drift apart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ingest.wire.events import Feedback, Prediction

SCHEMA_DIR = Path(__file__).parent / "schemas"
MODELS: dict[str, type[BaseModel]] = {
    "prediction.v1.json": Prediction,
    "feedback.v1.json": Feedback,
}


def rendered_schemas() -> dict[str, str]:
    out = {}
    for name, model in MODELS.items():
        schema: dict[str, Any] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            **model.model_json_schema(mode="validation"),
        }
        out[name] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def write_schemas(check: bool = False) -> int:
    stale = []
    for name, text in rendered_schemas().items():
        path = SCHEMA_DIR / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            stale.append(name)
            if not check:
                path.write_text(text, encoding="utf-8")
    if check and stale:
        print(f"stale JSON Schema files: {stale}; run `feedbackflow schemas`", file=sys.stderr)
        return 1
    print("schemas " + ("checked" if check else "written") + f": {sorted(MODELS)}")
    return 0
