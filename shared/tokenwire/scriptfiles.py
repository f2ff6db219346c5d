"""The server-side Lua scripts (``scripts/``), as Redis gets them."""

from __future__ import annotations

from importlib import resources


def load_script(name: str, *, allow_oom: bool = False, prelude: bool | str = True) -> str:
    """``scripts/<name>.lua``, after the per-stream prelude (``prelude``: the
    stream scripts share its helpers; a name: another prelude file, such as the
    conversation scripts' ``conversation_prelude``). ``allow_oom``: it may run
    when Redis is out of memory (``maxmemory``), so a generation can still end
    visibly."""
    folder = resources.files("tokenwire") / "scripts"
    # With a shebang Redis checks memory before a script runs (not at its first
    # write), so a refused script has written nothing.
    shebang = "#!lua flags=allow-oom\n" if allow_oom else "#!lua\n"
    prelude_name = "prelude" if prelude is True else prelude
    shared = (folder / f"{prelude_name}.lua").read_text() + "\n" if prelude_name else ""
    return shebang + shared + (folder / f"{name}.lua").read_text()
