"""A plugin whose implementation asks for an argument the spec does not have."""

from kefu.hooks import hookimpl


@hookimpl
def kefu_routes(kernel, router):
    return []
