variable "VERSIONS" {
  default = ["1.20", "1.21"]
}
group "default" {
  targets = ["build", "variant"]
}
target "build" {
  name = "build-${replace(v, ".", "-")}"
  matrix = {
    v = VERSIONS
  }
  args = {
    GO_VERSION = v
  }
  tags = ["example/go:${v}"]
}
target "variant" {
  name = "variant-${item.name}"
  matrix = {
    item = [
      { name = "slim", base = "debian:slim" },
      { name = "full", base = "debian" },
    ]
  }
  args = {
    BASE = item.base
  }
  target = item.name
}
