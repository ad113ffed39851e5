"""A plugin that marks a misspelled hook implementation."""

from kefu.hooks import hookimpl


@hookimpl
def kefu_evnt(kernel, event):
    pass
