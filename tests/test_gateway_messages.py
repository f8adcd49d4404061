"""Issue 16's bug: the router and the ledger read a message's text through one function, so a
multi-part message is scored as exactly the text the ledger stores (they used to join the parts
with "\\n" and "" respectively)."""

import gateway_fixtures as fx
import httpx
from fake_openai import AppServer
from gateway_fixtures import KEYS, make_settings

from kdroute.messages import content_text, message_text
from kdroute.route.features import conversation_text

fakes, _reset_fakes = fx.fakes, fx._reset_fakes  # this module's fixtures
PARTS = [{"type": "text", "text": "first part"},
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
         {"type": "text", "text": ""}, {"type": "text", "text": "second part"}]


class RecordingRouter:
    """Scores every conversation 0.1 and remembers the text the router's features see."""

    scorer_name = "recording"
    threshold = 0.5
    version = "recording-1"

    def __init__(self):
        self.texts: list[str] = []

    def route(self, conversation, threshold=None):
        self.texts.append(conversation_text(conversation))
        return "student", 0.1


def test_content_parts_are_joined_by_newlines_skipping_non_text_parts():
    assert content_text(PARTS) == "first part\nsecond part"
    assert content_text(None) == "" and content_text("plain") == "plain"
    assert message_text({"role": "user", "content": PARTS}) == "first part\nsecond part"


def test_the_router_scores_the_text_the_ledger_stores(fakes, tmp_path):
    router = RecordingRouter()
    settings = make_settings(fakes[0].url, fakes[1].url, tmp_path / "l.db", store_text=True)
    app = create_app_with(settings, router)
    with AppServer(app) as server:
        resp = httpx.post(server.url + "/v1/chat/completions", timeout=30,
                          headers={"authorization": f"Bearer {KEYS[0]}"},
                          json={"model": "kdroute/auto",
                                "messages": [{"role": "user", "content": PARTS}]})
        assert resp.status_code == 200
        gw = fx.Gateway(server.url, tmp_path / "l.db", app, *fakes)
        row = gw.row(resp.headers["x-kdroute-request-id"])
    scored = [t for t in router.texts if "first part" in t]
    assert scored == ["first part\nsecond part"]
    assert row["prompt_text"] == "user: " + scored[0]  # the ledger's text is the router's
    # and the back end was sent the parts themselves, untouched
    sent = fakes[1].completion_calls()[-1].body["messages"][0]["content"]
    assert sent == PARTS


def create_app_with(settings, router):
    from kdroute.gateway import create_app

    return create_app(settings, router=router, env={"KDROUTE_API_KEYS": ",".join(KEYS)})
