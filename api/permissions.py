from rest_framework.permissions import DjangoModelPermissions

_VIEW = ["%(app_label)s.view_%(model_name)s"]


class ViewModelPermission(DjangoModelPermissions):
    """DjangoModelPermissions where reading (GET, HEAD, OPTIONS) needs the model's `view_` permission.

    Anonymous requests are refused (401 with token auth), users without the permission get 403.
    """

    perms_map = {**DjangoModelPermissions.perms_map, "GET": _VIEW, "HEAD": _VIEW, "OPTIONS": _VIEW}
