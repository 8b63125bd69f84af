"""Bootstrapper: first service on a node; initializes or joins the cluster under the node lock."""
