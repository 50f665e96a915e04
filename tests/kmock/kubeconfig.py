#!/usr/bin/env python3
"""Write a kubeconfig for the stand-in API server on 127.0.0.1:PORT.

    python3 tests/kmock/kubeconfig.py --port P --out FILE

Plain HTTP, and a token nothing checks (clients want some credential).
"""

import argparse

TEMPLATE = """\
apiVersion: v1
kind: Config
clusters:
- name: lash-kmock
  cluster:
    server: http://127.0.0.1:{port}
users:
- name: lash-kmock
  user:
    token: lash-kmock-any-token
contexts:
- name: lash-kmock
  context:
    cluster: lash-kmock
    user: lash-kmock
    namespace: default
current-context: lash-kmock
"""


def kubeconfig(port: int) -> str:
    return TEMPLATE.format(port=port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--out', required=True, help='the file to write')
    args = parser.parse_args()
    with open(args.out, 'w') as f:
        f.write(kubeconfig(args.port))


if __name__ == '__main__':
    main()
