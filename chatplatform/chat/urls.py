"""HTTP routes of the chat app: the demo shop page."""

from django.urls import path

from chatplatform.chat.views import demo_shop

urlpatterns = [path("", demo_shop, name="demo-shop")]
