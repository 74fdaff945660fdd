variable "TAG" {
  default = "one"
}
target "app" {
  tags = ["example/app:${TAG}"]
  args = { A = "1", B = "1" }
  platforms = ["linux/amd64"]
}
