"""The web app and the HTTP JSON API that clipd serves on loopback (see clipd.web.server).

static/ holds the page (plain files shipped in the package: no build step, nothing fetched).
"""
