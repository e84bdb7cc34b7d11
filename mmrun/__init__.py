"""mmrun: a configuration-driven market-making runner."""

__version__ = "0.1.0"


def _expose_hydra_plugins() -> None:
    """Let Hydra's plugin scan find mmrun's launcher (hydra_plugins/mmrun_launcher) in an editable
    install too: there the folder sits beside this package, not in site-packages' hydra_plugins."""
    import os

    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hydra_plugins")
    if not os.path.isfile(os.path.join(here, "mmrun_launcher", "mmrun_launcher.py")):
        return  # an installed wheel: the plugin is in site-packages/hydra_plugins already
    try:
        import hydra_plugins
    except ImportError:
        return
    if here not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(here)


_expose_hydra_plugins()
