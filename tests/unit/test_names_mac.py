from netlab import names


def test_container_mac_is_dockers_from_the_ip():
    assert names.container_mac("10.1.79.11") == "02:42:0a:01:4f:0b"
    assert names.container_mac("10.1.1.255") == "02:42:0a:01:01:ff"
