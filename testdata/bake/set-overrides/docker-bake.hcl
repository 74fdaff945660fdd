group "default" {
  targets = ["app", "api", "db"]
}
target "app" {
  tags = ["example/app"]
  args = { A = "1" }
}
target "api" {
  tags = ["example/api"]
  secret = ["id=tok,env=TOKEN"]
}
target "db" {
  tags = ["example/db"]
}
