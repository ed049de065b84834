pytest_plugins = ["labqpu.testing"]
