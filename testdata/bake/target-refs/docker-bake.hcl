target "a" {
  args = { P = BAKE_LOCAL_PLATFORM, C = BAKE_CMD_CONTEXT, X = sanitize("a.b/c") }
  tags = ["x/a"]
}
target "b" {
  tags = concat(target.a.tags, ["x/b"])
  args = { FROM_A = target.a.args.X }
}
target "c" {
  inherits = ["b"]
  labels = { l = target.b.tags[1] }
}
