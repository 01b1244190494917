"""A plugin whose import fails: the others must still load."""

import this_dependency_does_not_exist  # noqa: F401
