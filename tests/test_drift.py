"""generated/ is exactly what `derive` writes now (the golden test)."""
from __future__ import annotations

from pathlib import Path

from derive import render, write

from _derived import all_default

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "generated"


def test_generated_matches_a_fresh_render(tmp_path):
    files = render.render_all(list(all_default()))
    write.write_all(tmp_path, files)
    stale = write.stale(GENERATED, files)
    diffs = "\n".join(write.unified_diff(GENERATED, rel, files[rel]) for rel in stale)
    assert not stale, (f"generated/ is stale: {', '.join(stale)}\n{diffs}\n"
                       "Regenerate it with: derive   (or: python -m derive)")
    for rel, text in files.items():
        assert (tmp_path / rel).read_text(encoding="utf-8") == text


def test_every_generated_file_has_the_header():
    files = render.render_all(list(all_default()))
    for rel in files:
        assert write.is_generated(GENERATED / rel), rel
        head = (GENERATED / rel).read_text(encoding="utf-8").splitlines()[0]
        assert "templates/" in head and "Do not edit" in head


def test_no_arithmetic_in_templates():
    """Templates lay code out; the math is printed by SymPy. No operators between names."""
    import re
    for template in (ROOT / "templates").glob("*kernels*.jinja"):
        for n, line in enumerate(template.read_text().splitlines(), 1):
            code = re.sub(r"{{.*?}}|{%.*?%}|#.*$|\"[^\"]*\"|'[^']*'", "", line)
            assert not re.search(r"\b(mu|var|std|xhat|dout|gamma|eps)\b\s*[-+*/]", code), \
                f"{template.name}:{n}: {line.strip()}"


def test_readme_excerpt_is_the_printed_derivation():
    """Every display-math block quoted in the README stands in the generated document."""
    import re
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    document = (GENERATED / "derivations" / "batchnorm.md").read_text(encoding="utf-8")
    blocks = re.findall(r"\$\$.*?\$\$", readme, flags=re.S)
    assert len(blocks) >= 6
    for block in blocks:
        assert block in document, block
