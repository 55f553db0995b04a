from django.urls import path

from chatplatform.agents import views

app_name = "agents"

urlpatterns = [
    path("", views.inbox, name="inbox"),
    path(
        "conversations/<uuid:conversation_id>/questions/<uuid:question_id>/faq-options/",
        views.faq_options,
        name="faq_options",
    ),
    path(
        "conversations/<uuid:conversation_id>/faq/",
        views.faq_action,
        name="faq_action",
    ),
]
