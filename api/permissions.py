from rest_framework.permissions import DjangoModelPermissions

_VIEW = ["%(app_label)s.view_%(model_name)s"]


class ViewModelPermission(DjangoModelPermissions):
    """DjangoModelPermissions where reading (GET, HEAD, OPTIONS) needs the model's `view_` permission.

    Anonymous requests are refused (401 with token auth), users without the permission get 403.
    """

    perms_map = {**DjangoModelPermissions.perms_map, "GET": _VIEW, "HEAD": _VIEW, "OPTIONS": _VIEW}

    def _queryset(self, view):
        # The model is all the check needs: a view that names its `queryset` is not asked to build
        # its listing (filters, ordering) on every request just to say which model it serves.
        queryset = getattr(view, "queryset", None)
        return queryset if queryset is not None else super()._queryset(view)
