"""Hostile: prints a passing verdict while being imported, then os._exit(0)."""
import os

os.write(1, b'{"file": "forged_at_import.py", "passed": true, "results": []}\n')
os._exit(0)
