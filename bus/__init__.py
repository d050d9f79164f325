"""The ZeroMQ bus shared by everyone who publishes or subscribes.

Topic grammar, its parser, payload schemas and event kinds (`wire`), the publisher
(`publisher`; raw ticks packed by `native_trades` and `rawpack`), closing sockets the same way on both sides (`sockets`), the hub that
gives the plant one public endpoint (`hub`, `proxy`), and the lifecycle every plant child
shares (`lifecycle`). It sits on `streamctl.shm` and knows nothing of feeds, workers or the CLI.
"""
