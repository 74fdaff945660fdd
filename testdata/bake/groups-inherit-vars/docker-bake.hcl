variable "TAG" {
  default = "latest"
}
variable "REPO" {
  default = "example/app"
}
variable "DEBUG" {
  default = false
}
variable "REPLICAS" {
  default = 2
}
variable "UNSET" {}
variable "FULL" {
  default = "${REPO}:${TAG}"
}
BASE_IMAGE = "alpine:3.20"

group "default" {
  targets = ["all"]
}
group "all" {
  description = "Everything"
  targets = ["app", "tools"]
}
target "_common" {
  args = {
    BASE  = BASE_IMAGE
    EMPTY = UNSET
    NULL  = null
  }
  labels = {
    "org.opencontainers.image.source" = "https://example.com/<repo>&x"
  }
  platforms  = ["linux/amd64"]
  cache-from = ["type=registry,ref=example/cache", "example/other"]
}
target "_release" {
  annotations = ["index:org.example=1"]
  attest      = ["type=provenance,mode=max", "type=sbom,disabled=true"]
}
target "app" {
  description = "The app"
  inherits    = ["_common", "_release"]
  dockerfile  = "app.Dockerfile"
  tags        = [FULL, "${REPO}:${upper(TAG)}", join("-", split(".", "a.b.c"))]
  args = {
    DEBUG     = DEBUG ? "on" : "off"
    REPLICAS  = REPLICAS * 2
    SAME      = equal(TAG, "latest")
    DIFF      = notequal(TAG, "latest")
    BOTH      = and(DEBUG, true)
    EITHER    = or(DEBUG, true)
    LOW       = lower("MiXeD")
    DATE      = formatdate("YYYY-MM-DD hh:mm EEE MMM", "2024-03-05T07:08:09Z")
    TRIMMED   = trimprefix("v1.2.3", "v")
    LITERAL   = "$${NOT_EXPANDED}"
    COUNT     = length(concat(["a"], ["b", "c"]))
    FIRST     = coalesce("", "fallback")
    SECOND    = coalesce(null, "fallback")
    NULL      = "set"
  }
  cache-to = ["type=inline"]
  output   = ["type=docker,dest=out.tar"]
  secret   = ["id=token,env=TOKEN", "type=file,id=cfg,src=./cfg.txt"]
  no-cache = true
  pull     = true
  network  = "none"
  shm-size = "128m"
  target   = "release"
}
target "tools" {
  inherits = ["_common"]
  context  = "tools"
  platforms = ["linux/amd64", "linux/arm64"]
  no-cache-filter = ["build"]
}
