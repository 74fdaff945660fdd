target "default" {
  tags = ["example/default"]
}
