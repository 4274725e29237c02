"""Identity sources behind one small protocol: the built-in directory (``local``) and LDAP directories
(``ldap``, and ``ad``, its Active Directory preset), registered by type name, configured from the IDP_CONFIG
YAML file and the database, and tried in order (or picked by the username's domain) by the chain.

Modules: ``base`` (the protocol and its verdict), ``settings`` (validated configuration), ``registry`` (type
name -> factory), ``local``, ``ldap`` (the directory client), ``ad`` (its Active Directory dialect) and
``ldap_connector`` (sign-in through them), ``shadow`` (users table rows for directory users), ``secrets``
(bind passwords), ``chain``, ``admin`` (the services behind ``idp directory``) and ``cli``.
"""
