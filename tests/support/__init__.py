"""What the tests share and only the tests use (test files never import each other): the toy task and app, helpers
on the tiny model, the preloaded process server, local Bluesky and feed servers, the crash and distributed harnesses."""
