"""Compatibility layers: other libraries' APIs over tagwire links.

    tagwire.compat.spu   libspu's link API (``spu.libspu.link``): Desc,
                         IChannel, create_with_channels, create_brpc, and a
                         Context with libspu's method names.

Each layer is a plain Python module over the public ``tagwire`` API; import
the one you need (``from tagwire.compat import spu as link``).
"""

__all__ = ["spu"]
