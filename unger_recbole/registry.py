"""A name -> class registry, shared by the text encoders and the quantizers (selected by yaml keys)."""


class Registry(dict):
    """``{name: class}`` for subclasses of ``base``; ``kind`` names them in error messages."""

    def __init__(self, kind, base):
        super().__init__()
        self.kind, self.base = kind, base

    def register(self, name):
        """Class decorator registering a subclass of ``base`` under ``name`` (also sets ``cls.name``)."""

        def decorator(cls):
            if not (isinstance(cls, type) and issubclass(cls, self.base)):
                raise TypeError(f"{cls!r} is not a {self.base.__name__} subclass")
            if name in self and self[name] is not cls:
                raise ValueError(f"{self.kind} name {name!r} is already registered to {self[name]!r}")
            cls.name = name
            self[name] = cls
            return cls

        return decorator

    def alias(self, alias, name):
        """Make ``alias`` build the same class as ``name`` (the class keeps its own ``name``)."""
        if name not in self:
            raise ValueError(f"cannot alias {alias!r}: {name!r} is not a registered {self.kind}")
        if alias in self and self[alias] is not self[name]:
            raise ValueError(f"{self.kind} name {alias!r} is already registered")
        self[alias] = self[name]

    def build(self, name, **params):
        """Instantiate the class registered as ``name`` with ``params``."""
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}; registered {self.kind}s: {sorted(self)}")
        return self[name](**params)


def with_defaults(kind, name, defaults, params):
    """``{**defaults, **params}``, refusing keys that are not among ``defaults`` (a typo in yaml)."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for {kind} {name!r}; accepted keys: {sorted(defaults)}")
    return {**defaults, **params}
