from django.conf import settings


def portal(request):
    return {"PORTAL_INSTANCE": settings.INSTANCE_ID}
