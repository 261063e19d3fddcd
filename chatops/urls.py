app_name = "chatops"
urlpatterns = []
