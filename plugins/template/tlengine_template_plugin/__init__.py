"""tlengine-plugin-template: the smallest complete third-party tlengine plugin.

Everything it contributes is registered in :mod:`tlengine_template_plugin.plugin`, which
the ``tlengine`` entry point in ``pyproject.toml`` points at.
"""

__version__ = "0.1.0"
