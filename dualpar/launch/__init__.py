"""Launchers: process creation and rendezvous only; every one of them runs `worker_main` on each rank."""
