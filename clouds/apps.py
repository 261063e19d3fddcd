from django.apps import AppConfig


class CloudsConfig(AppConfig):
    name = "clouds"
    verbose_name = "OpenStack clouds"

    def ready(self) -> None:
        from portal.jobs.labels import register_job_labels
        from storage.imports import register_import_source

        from . import admin_glance, glance

        register_import_source(glance.SOURCE, glance.GLANCE_SOURCE)
        admin_glance.register()
        register_job_labels({glance.GLANCE_PUBLISH: "Publish an image to Glance"})
