"""The `inferstack` command line: the top layer, which nothing else imports."""
