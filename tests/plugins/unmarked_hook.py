"""A plugin that forgot @hookimpl on a real hook name: pluggy would ignore it silently."""


def kefu_event(kernel, event):
    pass
