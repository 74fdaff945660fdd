target "default" {
  args = { FROM_OVERRIDE = "yes" }
}
