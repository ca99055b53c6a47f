"""The CLI imports only the module of the verb it runs; the table that says which is whole."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

from hyperrun import cli


def test_every_verb_is_in_the_table_with_the_module_that_registers_it() -> None:
    found = {}
    for name in dict.fromkeys(cli.VERBS.values()):
        verbs = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"hyperrun.cli.{name}").register(verbs)
        found.update({verb: name for verb in verbs.choices})
    assert found == cli.VERBS


def test_exec_imports_neither_libvirt_nor_the_image_store() -> None:
    probe = ("import sys; from hyperrun import cli; cli.build_parser(['exec', 'c', 'true']); "
             "print(' '.join(sorted(m for m in sys.modules if m.startswith(('libvirt', "
             "'hyperrun.images', 'hyperrun.registry', 'yaml')))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == ""


def test_help_still_lists_every_verb() -> None:
    text = cli.build_parser().format_help()
    assert all(verb in text for verb in cli.VERBS)
