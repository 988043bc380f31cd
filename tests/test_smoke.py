"""The app answers its public endpoints with the documented shapes."""


def test_models_need_a_key(client):
    response = client.get("/v1/models")
    assert response.status_code == 401
    assert response.json["error"]["type"] == "authentication_error"
    assert response.headers["x-request-id"]
