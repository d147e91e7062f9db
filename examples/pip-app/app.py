"""pip-app: converts an internationalized domain name to its ASCII form with idna and six."""

import idna
import six

DOMAIN = "bücher.example"


def to_ascii(domain: str) -> str:
    return six.ensure_str(idna.encode(domain))


def main() -> None:
    print(f"{DOMAIN} -> {to_ascii(DOMAIN)}")


if __name__ == "__main__":
    main()
