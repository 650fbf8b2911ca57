"""`aftershock.lazyimport`: kubernetes_asyncio's generated packages load on first use, and every
name they export is still there, the same object as an eager import gives.

Each check runs in a fresh interpreter (the finder is process-wide, and this one has imported
the library eagerly already)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from aftershock import lazyimport


def _python(code: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True, timeout=120
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_the_operator_s_imports_load_a_few_generated_modules_not_all() -> None:
    got = _python(
        """
        import json, sys
        from aftershock import lazyimport
        assert lazyimport.install()
        import kopf  # imports kubernetes_asyncio.client to recognise its models
        import aftershock.handlers, aftershock.kube.client
        print(json.dumps({"loaded": sorted(m for m in sys.modules if m.startswith("kubernetes_asyncio"))}))
        """
    )
    eager = _python(
        """
        import json, sys
        import kubernetes_asyncio.client
        print(json.dumps({"loaded": sorted(m for m in sys.modules if m.startswith("kubernetes_asyncio"))}))
        """
    )
    loaded, everything = got["loaded"], eager["loaded"]
    assert isinstance(loaded, list)
    assert isinstance(everything, list)
    assert len(everything) > 800, len(everything)  # what the library's own initialiser imports
    assert len(loaded) < 60, loaded
    assert "kubernetes_asyncio.client.models.v1_pod" not in loaded
    assert "kubernetes_asyncio.client.api.core_v1_api" not in loaded  # loads when a Kube is made


def test_every_exported_name_resolves_to_the_object_an_eager_import_gives() -> None:
    code = """
        import json, sys
        LAZY = {lazy}
        if LAZY:
            from aftershock import lazyimport
            assert lazyimport.install()
        import importlib
        seen = {{}}
        for package in ("kubernetes_asyncio", "kubernetes_asyncio.client", "kubernetes_asyncio.client.models",
                        "kubernetes_asyncio.client.api"):
            module = importlib.import_module(package)
            for name in sorted(module.__all__):
                value = getattr(module, name)
                seen[package + "." + name] = getattr(value, "__module__", None) or value.__name__
        seen["version"] = importlib.import_module("kubernetes_asyncio.client").__version__
        print(json.dumps(seen))
    """
    lazy = _python(code.format(lazy=True))
    eager = _python(code.format(lazy=False))
    assert len(eager) > 1500
    assert lazy == eager


def test_an_unknown_name_is_an_attribute_error_and_the_table_skips_future_imports() -> None:
    got = _python(
        """
        import json
        from aftershock import lazyimport
        lazyimport.install()
        import kubernetes_asyncio.client as c
        try:
            c.NoSuchThing
            print(json.dumps({"raised": False}))
        except AttributeError as exc:
            print(json.dumps({"raised": True, "message": str(exc)}))
        """
    )
    assert got == {
        "raised": True,
        "message": "module 'kubernetes_asyncio.client' has no attribute 'NoSuchThing'",
    }
    table = lazyimport.exports(
        "from __future__ import absolute_import\n"
        "from a.b import C\nfrom a.d import E as F\nimport a.g as g\n    from indented import X\n"
    )
    assert table == {"C": ("a.b", "C"), "F": ("a.d", "E"), "g": ("a.g", None)}


def test_install_does_nothing_once_the_library_is_imported() -> None:
    import kubernetes_asyncio.client  # noqa: F401  (this process: eager, as the tests use it)

    assert lazyimport.install() is False
