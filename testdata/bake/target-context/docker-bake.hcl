group "default" {
  targets = ["app"]
}
target "base" {
  dockerfile = "base.Dockerfile"
  tags = ["example/base"]
}
target "app" {
  contexts = {
    base  = "target:base"
    other = ""
  }
  tags = ["example/app"]
}
target "unused" {
  contexts = {
    app = "target:app"
  }
}
