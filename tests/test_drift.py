"""generated/ is exactly what `derive` writes now (the golden test)."""
from __future__ import annotations

from pathlib import Path

from _derived import all_default, rendered_files

from derive.forward.library import ENTRIES
from derive.output import render, write

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "generated"


def test_generated_matches_a_fresh_render(tmp_path):
    files = rendered_files(all_default())
    write.write_all(tmp_path, files)
    stale = write.stale(GENERATED, files)
    diffs = "\n".join(write.unified_diff(GENERATED, rel, files[rel]) for rel in stale)
    assert not stale, (f"generated/ is stale: {', '.join(stale)}\n{diffs}\n"
                       "Regenerate it with: derive   (or: python -m derive)")
    for rel, text in files.items():
        assert (tmp_path / rel).read_text(encoding="utf-8") == text


def test_every_generated_file_has_the_header():
    files = rendered_files(all_default())
    for rel in files:
        assert write.is_generated(GENERATED / rel), rel
        head = (GENERATED / rel).read_text(encoding="utf-8").splitlines()[0]
        assert ("templates/" in head or "derive/backends/" in head) and "Do not edit" in head


def test_no_arithmetic_in_templates():
    """Templates lay code out; the math is printed by SymPy. No operators between names."""
    import re
    for template in (ROOT / "templates").glob("*kernels*.jinja"):
        for n, line in enumerate(template.read_text().splitlines(), 1):
            code = re.sub(r"{{.*?}}|{%.*?%}|#.*$|\"[^\"]*\"|'[^']*'", "", line)
            assert not re.search(r"\b(mu|var|std|xhat|dout|gamma|eps)\b\s*[-+*/]", code), \
                f"{template.name}:{n}: {line.strip()}"


def display_blocks(text: str) -> list[str]:
    """The display-math blocks of a Markdown file, paired as a renderer pairs them.

    A block opens at a line that starts with ``$$`` and closes at the next ``$$``, wherever it
    stands; the pairs are taken in order across the whole file, so a lone ``$$`` pairs with the
    next one however much prose lies between them."""
    blocks, body = [], None
    for line in text.splitlines():
        if body is None:
            if not line.startswith("$$"):
                continue
            body, line = [], line[2:]
            if not line:
                continue
        if "$$" in line:
            before = line[:line.index("$$")]
            blocks.append("\n".join(body + ([before] if before else [])))
            body = None
        else:
            body.append(line)
    assert body is None, "a $$ block is never closed"
    return blocks


def test_readme_excerpt_is_the_printed_derivation():
    """Every display block of the README is a whole, non-empty block of the generated document."""
    readme = display_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    document = display_blocks((GENERATED / "derivations" / "batchnorm.md").read_text(encoding="utf-8"))
    assert len(readme) >= 6
    for block in readme:
        assert block.strip(), "an empty $$ block in the README"
        lines = block.splitlines()
        assert all(line.strip() and not line.startswith("#") for line in lines), \
            f"prose, a blank line or a heading inside a $$ block of the README:\n{block}"
        assert block in document, f"not a whole block of batchnorm.md:\n{block}"


def test_the_block_reader_pairs_as_a_renderer_does():
    assert display_blocks("$$\na = b\n$$\n\ntext\n\n$$\nc\n$$\n") == ["a = b", "c"]
    assert display_blocks("$$\n\n$$\n") == [""]
    assert display_blocks("$$\n\n## 7. prose\n$$\n$$\n$$\n") == ["\n## 7. prose", ""]
    assert display_blocks("$$x = 1$$\n$$ y\n$$") == ["x = 1", " y"]


def test_python_m_generated_lists_what_is_there(capsys):
    """`python -m generated` prints every variant and function, the backends and the derivations."""
    import runpy

    import generated
    runpy.run_module("generated", run_name="__main__")
    out = capsys.readouterr().out
    assert all(name in out for name in generated.__all__)
    assert "generated.numba" in out and str(GENERATED / "derivations") in out
    assert all(f"{e.spec.name}.md" in out for e in ENTRIES)


def test_only_variants_with_modes_speak_of_training_mode():
    for e in ENTRIES:
        text = (GENERATED / "derivations" / f"{e.spec.name}.md").read_text(encoding="utf-8")
        assert ("In training mode" in text) == e.running_stats, e.spec.name


def test_each_document_says_once_that_derive_printed_it():
    for path in sorted((GENERATED / "derivations").iterdir()):
        text = path.read_text(encoding="utf-8").lower()
        assert text.count("printed by") == 1, path.name


def test_preflight_knows_every_template():
    """derive checks the templates before proving: its list is exactly the templates folder."""
    assert set(write.TEMPLATES) == {p.name for p in (ROOT / "templates").glob("*.jinja")}
