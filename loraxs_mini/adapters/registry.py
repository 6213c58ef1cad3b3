"""
The registry: every fine-tuning method, by name, in the order tables list them.

A method is one class in one file (base.py says what a class must say); this
list is the only place that names them all. train.py, AdapterConfig, adapter
files, the export, the comparison and the benchmark take every method from here.
Adding a method is its file and one line below, or, from outside the package,
one call: register(MyAdapterLinear).
"""

import inspect
import re

from ..errors import LoraxsError, is_whole
from .base import OFFERED, AdaptedLinear, Method, Setting, init_parameters
from .baselines import FullFineTuning, ZeroShot
from .lora import LoRALinear
from .lorasb import LoRASBLinear
from .loraxs import LoRAXSLinear
from .tinylora import TinyLoRALinear
from .vera import VeRALinear

DEFAULT_METHOD = "loraxs"  # train.py's --method when none is given: the method this project is named after
METHODS = {
    method.name: method
    for method in (
        ZeroShot,
        FullFineTuning,
        LoRALinear,
        VeRALinear,
        LoRAXSLinear,
        TinyLoRALinear,
        LoRASBLinear,
    )
}


def register(method):
    """Add a method to the registry, once it says what base.py's table requires; returns it (a decorator too)."""
    problem = what_is_missing(method)
    if problem:
        raise LoraxsError(f"cannot register {getattr(method, '__name__', repr(method))}: {problem}")
    METHODS[method.name] = method
    return method


def what_is_missing(method):
    """Why `method` cannot be registered, in words, or None."""
    if not (isinstance(method, type) and issubclass(method, Method)):
        return "a method is a class derived from AdaptedLinear (base.py), not an instance or a name"
    name = method.name
    if not (isinstance(name, str) and re.fullmatch(r"[a-z][a-z0-9_-]*", name)) or name == "all":
        return f"its name must be a lower-case word that --method can take (not 'all'), got {name!r}"
    if METHODS.get(name, method) is not method:
        return f"the name {name!r} is taken by {METHODS[name].__name__}; give it a name of its own"
    if not all(isinstance(setting, Setting) for setting in method.settings.values()):
        return "each of its settings must be a Setting(default, help, choices=None) (base.py)"
    if not issubclass(method, AdaptedLinear):  # none and full: nothing to build, so nothing new to train
        if method.trains and not method.trains_base:
            return "a method that adds no adapter trains nothing (trains = False) or the model itself (trains_base)"
        return None
    if not (is_whole(method.default_rank) and method.default_rank > 0):
        return f"its default_rank must be a positive whole number, got {method.default_rank!r}"
    for member in ("__init__", "update", "delta_weight"):
        if getattr(method, member) is getattr(AdaptedLinear, member):
            return f"it does not define {member} (base.py's table: what a method must say)"
    if method.adapt.__func__ is Method.adapt.__func__:  # the default adapt fills __init__'s parameters by name
        parameters = inspect.signature(method.__init__).parameters
        unknown = [
            name
            for name in init_parameters(method)
            if name not in OFFERED
            and name not in method.settings
            and parameters[name].default is inspect.Parameter.empty
        ]
        if unknown:
            return (
                f"its __init__ asks for {', '.join(unknown)}, which adding adapters cannot give (it gives "
                f"{', '.join(OFFERED)} and the method's settings): give a default, or write adapt"
            )
    return None


def adapter_methods():
    """The names of the methods that add adapters (and so have a rank): all but none and full."""
    return [name for name, method in METHODS.items() if issubclass(method, AdaptedLinear)]
