"""JoinService: attests joining nodes, then issues disk keys, kubelet certs and join tokens."""
