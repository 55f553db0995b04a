"""Dashboard pages over HTTP: access control, site restriction, CSV export."""

from __future__ import annotations

import csv
import io

from django.contrib.auth.models import User
from django.test import Client

from tests.dashboards.conftest import RANGE, KnownData


def csv_rows(response) -> list[list[str]]:
    assert response["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.content.decode())))


def test_anonymous_is_sent_to_login(client: Client, known_data: KnownData) -> None:
    for url in ["/dashboard/", "/dashboard/export/daily.csv", "/dashboard/gaps/"]:
        response = client.get(url, RANGE)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/?next=/dashboard/")


def test_non_staff_user_gets_403_and_no_data(client: Client, known_data: KnownData) -> None:
    # given
    user = User.objects.create_user("customer", password="pw")
    client.force_login(user)
    # when / then
    for url in ["/dashboard/", "/dashboard/export/daily.csv", "/dashboard/gaps.csv"]:
        response = client.get(url, RANGE)
        assert response.status_code == 403
        assert b"Shop" not in response.content
        assert b"2026-03-02" not in response.content


def test_staff_restricted_to_one_site_sees_only_that_site(
    client: Client, shop_staff: User, known_data: KnownData
) -> None:
    # given
    client.force_login(shop_staff)
    # when: no site chosen means "all my sites" = Shop only
    page = client.get("/dashboard/", RANGE)
    daily = csv_rows(client.get("/dashboard/export/daily.csv", RANGE))
    # then
    assert page.status_code == 200
    assert b'<option value="%d">Shop</option>' % known_data.shop.pk in page.content
    assert b"Other" not in page.content
    assert daily[1][:4] == ["2026-03-02", "1", "3", "4"]  # Other's day-1 question not counted


def test_staff_cannot_ask_for_another_sites_data(
    client: Client, shop_staff: User, known_data: KnownData
) -> None:
    client.force_login(shop_staff)
    page = client.get("/dashboard/", {**RANGE, "site": known_data.other.pk})
    export = client.get("/dashboard/export/cost.csv", {**RANGE, "site": known_data.other.pk})
    assert page.status_code == 400
    assert b"Select a valid choice" in page.content
    assert b"chart-data" not in page.content
    assert export.status_code == 400


def test_staff_without_a_grant_sees_no_data(client: Client, known_data: KnownData) -> None:
    user = User.objects.create_user("newstaff", password="pw", is_staff=True)
    client.force_login(user)
    page = client.get("/dashboard/", RANGE)
    daily = csv_rows(client.get("/dashboard/export/daily.csv", RANGE))
    assert page.status_code == 200
    assert b'id="no-sites"' in page.content
    assert [row[1:6] for row in daily[1:]] == [["0"] * 5, ["0"] * 5]


def test_superuser_page_has_every_table_chart_data_and_formula(
    client: Client, superuser: User, known_data: KnownData
) -> None:
    client.force_login(superuser)
    page = client.get("/dashboard/", {**RANGE, "site": known_data.shop.pk})
    html = page.content.decode()
    assert page.status_code == 200
    for name in ["daily", "source_mix", "sources", "latency", "cost"]:
        assert f'id="table-{name}"' in html
        assert f"/dashboard/export/{name}.csv?" in html
    assert 'id="chart-data"' in html
    assert "chart-4.6.1.umd.min.js" in html
    assert "66.7%" in html  # day 1 cache hit rate, shown as a percentage
    assert "GPU_COST_PER_HOUR" in html


def test_csv_export_of_each_table(client: Client, superuser: User, known_data: KnownData) -> None:
    client.force_login(superuser)
    params = {**RANGE, "site": known_data.shop.pk}
    daily = client.get("/dashboard/export/daily.csv", params)
    assert daily["Content-Disposition"] == 'attachment; filename="daily-20260302-20260303.csv"'
    rows = csv_rows(daily)
    assert rows[0][:3] == ["day", "conversations", "customer messages"]
    assert rows[2] == ["2026-03-03", "1", "2", "3", "1", "1", "0.5", "2", "2", "1.0", "0"]
    latency = csv_rows(client.get("/dashboard/export/latency.csv", params))
    assert ["agent", "1", "", "", "", "60000.0", "60000.0", "60000.0"] in latency
    cost = dict(csv_rows(client.get("/dashboard/export/cost.csv", params))[1:])
    assert cost["cache hits"] == "3"
    assert client.get("/dashboard/export/nope.csv", params).status_code == 404


def test_bad_date_range_is_a_400_with_a_message(client: Client, superuser: User) -> None:
    client.force_login(superuser)
    response = client.get("/dashboard/", {"start": "2026-03-05", "end": "2026-03-01"})
    assert response.status_code == 400
    assert b"The start date is after the end date." in response.content


def test_the_dashboard_does_not_claim_a_gpu(
    client: Client, shop_staff: User, known_data: KnownData
) -> None:
    # a CPU-only run (the offline demo model) has model answers too: they did not run on a GPU
    client.force_login(shop_staff)
    page = client.get("/dashboard/", RANGE)
    assert page.status_code == 200
    assert b"ran on the GPU" not in page.content
    assert b"model answers generated" in page.content
