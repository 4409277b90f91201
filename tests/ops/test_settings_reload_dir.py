"""``--reload-dir`` is the keyword ``reload_dir`` (API.md: a keyword is the flag's name in snake_case):
one directory or a list of them; ``reload_dirs`` (a list) keeps working."""

from __future__ import annotations

import pytest

from aioserve import App, Config
from aioserve.config import SettingError

# -- reload_dir= (--reload-dir), keeping reload_dirs= ----------------------------------------------

@pytest.mark.parametrize("value,dirs", [("src", ["src"]), (["src", "lib"], ["src", "lib"]), (("src",), ["src"]),
                                        (None, None)])
def test_reload_dir_takes_a_directory_or_a_list(value, dirs):
    assert Config.from_settings(reload=True, reload_dir=value).reload_dirs == dirs


def test_reload_dirs_keeps_working():
    assert Config.from_settings(reload=True, reload_dirs=["src"]).reload_dirs == ["src"]


def test_reload_dir_errors_name_reload_dir():
    with pytest.raises(SettingError, match=r"^reload_dir needs reload$"):
        Config.from_settings(reload_dir="src")
    with pytest.raises(SettingError, match=r"^reload_dir must be a directory name, a list of them, or None, not 5$"):
        Config.from_settings(reload=True, reload_dir=5)
    with pytest.raises(SettingError, match=r"^reload_dir must be "):
        Config.from_settings(reload=True, reload_dir=["src", ""])
    with pytest.raises(TypeError, match=r"^give reload_dir or reload_dirs, not both$"):
        Config.from_settings(reload=True, reload_dir="a", reload_dirs=["b"])


def test_run_takes_reload_dir():
    with pytest.raises(ValueError, match=r"^reload_dir needs reload$"):
        App().run(reload_dir="src")
