"""The live web view (`streamctl web`): a subscriber like any other application, bridging the
plant's ZeroMQ topics to browsers over WebSockets, with the page and the chart library it serves."""
