app_name = "consoles"
urlpatterns = []
