"""Writes geoip-test.mmdb: a tiny database in MaxMind's GeoLite2-Country format, for
tests only. Its networks are the documentation ranges (RFC 5737, RFC 3849), which no
real client has, so the file says nothing about anyone.

    pip install mmdb-writer netaddr && python make-geoip-test.py
"""

from mmdb_writer import MMDBWriter
from netaddr import IPSet

COUNTRIES = {
    "192.0.2.0/24": "FR",
    "198.51.100.0/24": "US",
    "203.0.113.0/24": "DE",
    "2001:db8::/32": "JP",
}

writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
for network, iso in COUNTRIES.items():
    writer.insert_network(IPSet([network]), {"country": {"iso_code": iso}})
writer.to_db_file("geoip-test.mmdb")
