#!/usr/bin/env python3
"""CDK entry point (cdk.json: `../.venv/bin/python app.py`). Settings come from the CDK context."""

from healthtech_infra import build_app

app, _ = build_app()
app.synth()
