"""Bootstrapping a cluster: its directory (CA, member and host certificates, the etcd
members' ``/etc/default/etcd``, each host's config bundle) and the first admin."""
