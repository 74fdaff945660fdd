variable "TAG" {
  default = "two"
}
target "app" {
  args = { B = "2", C = "3" }
  cache-from = ["example/cache"]
}
target "extra" {
  inherits = ["app"]
}
