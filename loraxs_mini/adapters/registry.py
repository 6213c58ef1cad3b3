"""
The registry: every fine-tuning method, by name, in the order tables list them.

A method is one class in one file (base.py says what a class must say); this
list is the only place that names them all. train.py, AdapterConfig, adapter
files, the export, the comparison and the benchmark take every method from here.
Adding a method is its file and one line below, or, from outside the package,
one call: register(MyAdapterLinear).
"""

from ..errors import LoraxsError
from .base import AdaptedLinear
from .baselines import FullFineTuning, ZeroShot
from .lora import LoRALinear
from .lorasb import LoRASBLinear
from .loraxs import LoRAXSLinear
from .tinylora import TinyLoRALinear
from .vera import VeRALinear

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
    """Add a method (a Method or AdaptedLinear subclass) to the registry; returns it, so it works as a decorator."""
    if not method.name or (method.name in METHODS and METHODS[method.name] is not method):
        raise LoraxsError(f"a method needs a name of its own; {method.name!r} is taken or empty")
    METHODS[method.name] = method
    return method


def adapter_methods():
    """The names of the methods that add adapters (and so have a rank): all but none and full."""
    return [name for name, method in METHODS.items() if issubclass(method, AdaptedLinear)]
